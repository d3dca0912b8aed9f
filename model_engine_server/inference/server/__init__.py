"""The built-in inference server: a TGI-protocol peer (plus OpenAI routes) with continuous batching on PyTorch."""
