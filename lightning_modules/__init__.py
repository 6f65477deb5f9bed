"""Lightning modules, data modules and networks built from customops layers."""
