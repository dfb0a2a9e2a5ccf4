"""Call flows: the YAML model, the transport-free engine and the Twilio and SIP drivers."""
