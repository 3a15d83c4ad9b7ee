"""The HTTP front: the aiohttp application and its pages."""
