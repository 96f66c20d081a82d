"""Reaching a model's MLP neurons: forward hooks on the raw Hugging Face model, interventions, and the TransformerBridge for users' own claims."""
