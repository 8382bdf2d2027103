"""zipml.hw"""
