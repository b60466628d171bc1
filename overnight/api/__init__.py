"""HTTP: the app factory, routes, thin handlers, error rendering and auth."""
