"""The API role: event collector, profiles and recommendations over HTTP (FastAPI)."""
