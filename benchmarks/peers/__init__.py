"""The peers benchmark (``benchmarks/serve.py --peers``): one folder per peer server."""
