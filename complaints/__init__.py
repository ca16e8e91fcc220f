"""The complaint procedure's domain: models, terms, the working-day calendar, ids, views and search attributes."""
