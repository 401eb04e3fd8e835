"""The data layer: reading records, conversations and chat templates, tokenised examples."""
