"""`overnight batches ...`: a command-line client for any Message Batches server, through the official SDK."""
