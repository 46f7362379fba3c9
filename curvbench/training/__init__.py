"""Training: the loop over epochs and steps (`engine`), one tracked run per method and seed (`runner`), devices
and threads (`timing`), learning-rate schedules, what a run's timing depended on (`machine`), and progress
reporting (`progress`)."""
