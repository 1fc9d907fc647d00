"""The fork executor: a single-threaded zygote per server worker forks one child per run."""
