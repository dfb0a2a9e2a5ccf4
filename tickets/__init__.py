"""The shared record: calls now; customers, tickets, interactions and surveys later."""
