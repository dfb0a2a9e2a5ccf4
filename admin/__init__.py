"""Users, roles and sign-in for every surface; later the admin, supervisor and agent pages."""
