"""Worker tooling, a deployable of its own beside the API: the local vLLM CPU worker (model
preparation in ``models``, its command line in ``vllm``), detached process management shared by
both workers (``process``: pidfiles, /proc, start and stop) and the critic worker's HTTP server
(``critic_server``)."""
