"""From tracked runs to verdicts: censored statistics (`stats`), thesis claims judged (`claims`), the
batch-size rule (`batch_scaling`), and the tables, figures and HTML page (`pages`).

Reads MLflow through the client it is given; knows nothing of training or searches."""
