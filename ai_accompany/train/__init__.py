"""Training the accompanist's models: ``python -m ai_accompany.train --help``."""
