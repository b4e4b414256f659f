"""The KServe backend: InferenceService pairs behind a weighted HTTPRoute or VirtualService."""
