"""LLM base models: GGUF files run by llama.cpp and OpenAI-compatible endpoints."""
