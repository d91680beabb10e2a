"""stub"""
http_garbage = None
