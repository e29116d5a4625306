"""Sinks: components that hand closed bars to other storage or other processes.

Each sink module imports its own driver (sqlite3, psycopg, redis), so importing this
package costs nothing and a deployment installs only the drivers of the sinks it uses.
"""
