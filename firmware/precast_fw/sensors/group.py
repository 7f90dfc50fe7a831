"""Several sensors as one: `--sensor bme280,battery` reads each in turn into the same list.

Each driver writes only its own slots (build maps template fields to
drivers by name), so one values list holds them all.
"""


class Group:
    """read(values) runs every sensor's read(values), in order."""

    def __init__(self, sensors):
        self.sensors = tuple(sensors)

    def read(self, values):
        for s in self.sensors:
            s.read(values)
