"""Running: the services and the runs on them. client (one service over gRPC), launchers (local
venvs or remote addresses), pool (the services, which may train at once), runner (an Experiment,
run after run), parity_check (every framework's Inspect of the same models, compared)."""
