"""Recording: training runs (torch), the stopping rule, resume, threads, and streaming
snapshots into trajectory files through mechgrok.store."""
