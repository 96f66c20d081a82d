"""The paper's claims: the paper table, the claim checks registered by key, and the searches."""
