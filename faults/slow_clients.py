"""stub"""
slow_clients = None
