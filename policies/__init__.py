"""qosched.policies"""
