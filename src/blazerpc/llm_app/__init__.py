"""The LLM as a served app: the front door, the ``generate`` model, the OpenAI routes, the demo.

It sits on top of the engine package (``blazerpc.llm``), which knows nothing of it, and is
loaded by the server process without torch (the engine process loads it).
"""
