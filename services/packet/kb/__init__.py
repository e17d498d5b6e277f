"""The knowledge base: runbooks per tenant and global, split into sections and searched."""
