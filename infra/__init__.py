"""Process plumbing: configuration, the Temporal client, encryption and its codec server, logs, metrics, CLI exits."""
