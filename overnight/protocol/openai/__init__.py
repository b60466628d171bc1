"""OpenAI's wire formats: chat completions (translated to and from Messages), Files and Batches objects."""
