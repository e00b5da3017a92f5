
Node Control/Rebirth p