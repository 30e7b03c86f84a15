"""Recipes: one command that chains a study, its report and what is handed to the user (a layer
above the report, below the CLI)."""
