"""stub"""
soak = None
