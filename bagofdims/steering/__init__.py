"""Steering: sign-flip interventions in the live forward pass, their effects, and tracing."""
