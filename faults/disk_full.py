"""stub"""
disk_full = None
