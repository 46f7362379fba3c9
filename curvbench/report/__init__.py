"""From tracked runs to verdicts. Reading: `collect` (runs and searches from MLflow). Numbers: `stats`
(censored statistics), `summary` (rows per task, setting and method), `claims` (thesis claims judged),
`batch_scaling` (the batch-size rule), `step_costs` (steps priced in quiet seconds). Output: `tables`
(Markdown), `figures` (PNG), `html` (one page), `pages` (writes them all and logs the report run).

Reads MLflow through the client it is given; knows nothing of training or searches."""
