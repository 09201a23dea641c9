"""The frameworks' own ways to spread training over several devices, one module per way (see
customfit/devices.py for what every engine does alike). A floor below devices.py: these modules
import shares.py and hosts.py, never devices.py."""
