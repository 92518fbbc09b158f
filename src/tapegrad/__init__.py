"""tapegrad"""
