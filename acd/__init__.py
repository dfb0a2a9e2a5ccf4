"""Automatic call distribution in Redis: agents, queues, offers."""
