"""Inbound HTTP from Twilio and other channels, each request's signature checked."""
