"""``python -m dify_sandbox.executors.zygote``: the zygote process, started by a server worker."""

from dify_sandbox.executors.zygote.server import main

main()
