"""durably_server: the durably executor daemon."""
