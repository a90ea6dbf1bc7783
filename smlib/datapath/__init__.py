"""Serving an active disk over NBD: tapdisk on Xen hosts, nbdkit elsewhere.

server.py is what the SR commands call; paths.py where things live;
record.py the record of a running server; tapdisk.py and nbdkit.py the two
backends; plugin.py the nbdkit Python plugin over disk.py, the served
chain (reads through the chain, crash-safe writes into the leaf).
"""
