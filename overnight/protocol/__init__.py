"""Wire models only: what crosses the HTTP boundary and what backends consume and produce."""
