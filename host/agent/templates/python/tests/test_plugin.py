"""Native tests of the decoder, through the SDK's simulated host."""

import struct
import unittest

from wasmtap import Direction, Transport
from wasmtap.testing import Close, Data, Gap, check

from plugin import MAX_FRAME, Plugin


def framed(text):
    return struct.pack(">I", len(text)) + text.encode()


class DecoderTest(unittest.TestCase):
    def test_requests_and_out_of_order_responses(self):
        o = check(
            Plugin,
            [
                Data(Direction.TO_SERVER, framed("REQ 1 get user:1") + framed("REQ 2 put user:2")),
                Data(Direction.TO_CLIENT, framed("RES 2 OK") + framed("RES 1 FAIL")),
                Close(),
            ],
            max_pending=MAX_FRAME + 4,
        )
        self.assertIsNone(o.error)
        self.assertEqual(len(o.messages), 4)
        self.assertEqual(o.messages[0].operation, "GET")
        self.assertEqual(o.messages[0].correlation, 1)
        self.assertEqual(o.messages[3].correlation, 1)
        self.assertEqual(o.messages[3].status, "error")

    def test_a_gap_is_resynchronised(self):
        o = check(
            Plugin,
            [
                Gap(Direction.TO_SERVER, 10),
                Data(Direction.TO_SERVER, b"tail of a lost frame" + framed("REQ 7 get k")),
            ],
            max_pending=MAX_FRAME + 4,
        )
        self.assertIsNone(o.error)
        self.assertEqual([m.correlation for m in o.messages], [7])

    def test_probe_knows_the_protocol(self):
        self.assertEqual(Plugin.probe(Transport.TCP, Direction.TO_SERVER, framed("REQ 1 get k")), 90)
        self.assertEqual(Plugin.probe(Transport.TCP, Direction.TO_SERVER, b"GET / HTTP/1.1\r\n"), 0)


if __name__ == "__main__":
    unittest.main()
