"""MLflow: the client and its store (`client`), a run and its background sender (`tracked_run`), the checks of a
store or storage URL before anything is logged (`stores`), the request-header plugin (`http_headers`).

Depends on the ground floor only: training, search and the report log through it."""
