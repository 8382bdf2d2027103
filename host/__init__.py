"""zipml.host"""
