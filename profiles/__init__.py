"""qosched.profiles"""
