"""Models and pairs: loading Hugging Face models, where their MLP neurons are, the base/DPO pair."""
