"""The nginx edge in front of the gateway and the router: its config, its certificate, its process."""
