"""Presentation, apart from training: everything the programs show a person is written here, from
the results a run produced (its ``results.json`` and logs).

- ``tables``: the one Markdown table writer;
- ``figures``: every figure (matplotlib is imported, with its file-only Agg backend, only when a
  figure is drawn);
- ``reports``: each task's Markdown report (the MNIST sweep, transfer learning, the training
  benchmark, the captioners' README, samples and overfit check), the BLEU table written once;
- ``readme``: the README's results section, from a folder of published results.
"""
