"""The gateway's business logic: typed functions with keyword-only arguments, one module per
concern (import them from their module). The API, the admin, the commands and the tasks call
these and nothing else that writes."""
