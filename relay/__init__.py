"""The relay: a y-websocket compatible server carrying sessions between peers."""
