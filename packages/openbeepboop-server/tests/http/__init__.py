"""The HTTP surface's tests: the app under TestClient, a live server where the network matters."""
